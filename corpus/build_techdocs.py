#!/usr/bin/env python3
"""Build the second development corpus, `corpus/techdocs.txt`: technical documentation as plain
prose, from two Debian packages: the Python 3.11 documentation (`python3.11-doc`, the
reStructuredText sources Sphinx ships under html/_sources) and the PostgreSQL 15 manual
(`postgresql-doc-15`, HTML).

    python corpus/build_techdocs.py               # apt-get download both, write corpus/techdocs.txt
    python corpus/build_techdocs.py --deb A.deb --deb B.deb   # from .debs already on disk

Why this corpus: it is of another kind than the bundled King James Bible (modern technical
English: definitions, instructions, cross-references, identifiers), large enough (1.9M words;
2.64M WordPiece tokens at an 8k vocabulary, 2.49M of them in the training split),
permissively licensed (the PSF License Agreement and the PostgreSQL License, both allowing copying
and redistribution with their notices), and it comes from a package registry this project
reaches. It is not bundled (14 MB): the benchmarks call `ensure()`, which builds it once.

What is kept: the prose. Code (Python: literal blocks after `::`, code-block / doctest /
testcode, `>>>` sessions; PostgreSQL: <pre> blocks), tables, index entries, tables of contents,
navigation, labels, comments and signature lines are dropped; the bodies of notes, warnings and
function / class descriptions are kept; inline markup is reduced to its text (`:func:\\`len\\``
-> `len`, `` ``x`` `` -> `x`, `` `text <url>`_ `` -> `text`). Each paragraph or list item
becomes one line and each section (a heading and what follows it up to the next heading) one
document; documents are separated by a blank line, the convention `prepare-data` reads for plain
text. The output depends only on the packages' files: the same package versions give the same
bytes (the sha256 and versions are printed and kept in techdocs.txt.json).
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "techdocs.txt"
# package -> the folder of its files we read
PACKAGES = {
    "python3.11-doc": "usr/share/doc/python3.11/html/_sources/",
    "postgresql-doc-15": "usr/share/doc/postgresql-doc-15/html/",
}
# The Python release notes' changelog is a list of issue titles ("gh-12345: Fix ..."), not prose.
EXCLUDE = ("whatsnew/changelog.rst.txt",)
MIN_DOCUMENT_WORDS = 20  # headings with one short line under them make no examples

# ---- Python: reStructuredText sources -------------------------------------------------------

# Directives whose body is code, markup or metadata: dropped with everything indented under them.
SKIPPED_DIRECTIVES = {
    "code-block", "sourcecode", "code", "doctest", "testcode", "testsetup", "testcleanup",
    "testoutput", "productionlist", "index", "toctree", "highlight", "module", "moduleauthor",
    "sectionauthor", "currentmodule", "include", "literalinclude", "tabularcolumns", "list-table",
    "csv-table", "table", "raw", "image", "figure", "only", "program", "highlightlang",
    "audit-event", "audit-event-table", "availability", "impl-detail", "c:namespace", "opcode",
    "pdbcommand", "cmdoption", "option", "envvar", "miscnews", "limited-api-list",
    "unicode-escape", "digraphs", "blockdiag", "graphviz", "math",
}

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::(.*)$")
_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")  # labels `.. _x:`, footnotes `.. [#x]`, comments
_OPTION = re.compile(r"^\s+:[\w-]+:")  # a directive's option line, e.g. `   :synopsis: ...`
_UNDERLINE = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*(=+\s+)+=+\s*$|^\s*\+[-=+]+\+\s*$")
_GRID_ROW = re.compile(r"^\s*\|")
_ITEM = re.compile(r"^\s*(?:[-*+•]|#\.|\(?\d+[.)]|\(?[a-z][.)])\s+")

_INLINE = [
    (re.compile(r":(pep|rfc):`!?(\d+)[^`]*`"), lambda m: f"{m.group(1).upper()} {m.group(2)}"),
    (re.compile(r":[\w:.+-]+:`([^`<]*?)\s*<[^`>]*>`"), r"\1"),  # :ref:`text <label>`
    (re.compile(r":[\w:.+-]+:`[!~]?([^`]*)`"), r"\1"),  # :func:`len`, :const:`!None`
    (re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?"), r"\1"),  # `text <url>`_
    (re.compile(r"``([^`]+)``"), r"\1"),  # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),  # `name`_ or `interpreted`
    (re.compile(r"\s?\[#?[\w-]*\]_"), ""),  # footnote references [#x]_ / [1]_
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])"), r"\1"),
    (re.compile(r"\|(\w[\w-]*)\|"), r"\1"),  # |version| substitutions
    (re.compile(r"\\(.)"), r"\1"),
    (re.compile(r"\s+"), " "),
]


def inline_text(line: str) -> str:
    """One line of reST with its inline markup reduced to the text a reader sees."""
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rst_documents(text: str) -> Iterator[list[str]]:
    """The sections of one reST file, each as its paragraphs (one string each)."""
    lines = text.expandtabs(8).splitlines()
    doc: list[str] = []
    para: list[str] = []
    skip_below: int | None = None  # drop lines indented deeper than this (and blank lines)
    literal_next = False  # the paragraph just closed ended with "::": a literal block follows
    in_table = False
    text_indent = 0  # the column the paragraph's text starts at (after a list item's bullet)

    def close_paragraph() -> None:
        nonlocal literal_next
        if para:
            joined = inline_text(" ".join(para))
            if joined.endswith("::"):
                literal_next = True
                joined = joined[:-2].rstrip() + (":" if not joined[:-2].endswith(" ") else "")
            if joined.strip(" :"):
                doc.append(joined.strip())
            para.clear()

    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        stripped = line.strip()
        if skip_below is not None:
            if not stripped or _indent(line) > skip_below:
                continue
            skip_below = None
        if in_table:
            if _TABLE_BORDER.match(line) and not nxt.strip():
                in_table = False
            continue
        if not stripped:
            close_paragraph()
            continue
        if literal_next:  # the first non-blank line after "text::" starts the literal block
            literal_next = False
            if _indent(line) > 0:
                skip_below = _indent(line) - 1
                continue
        if _UNDERLINE.match(line):
            # a heading's underline (the text is the paragraph just read) or overline, or a
            # transition: a section starts a new document
            if para and _indent(line) == 0 and len(para) == 1:
                heading = inline_text(para[0])
                para.clear()
                if len(" ".join(doc).split()) >= MIN_DOCUMENT_WORDS:
                    yield doc
                doc = [heading] if heading else []
            else:
                close_paragraph()
            continue
        if _TABLE_BORDER.match(line):
            close_paragraph()
            in_table = True
            continue
        if _GRID_ROW.match(line) or stripped.startswith((">>>", "... ", "$ ")):
            close_paragraph()
            skip_below = None if stripped.startswith("$ ") else _indent(line) - 1
            if skip_below is not None:  # a doctest session runs to the next blank line
                skip_below = 10**6
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            close_paragraph()
            name = directive.group(2)
            if name in SKIPPED_DIRECTIVES:
                skip_below = _indent(line)
            elif name in {"versionadded", "versionchanged", "deprecated", "deprecated-removed"}:
                # `.. versionchanged:: 3.3 Text` keeps the text after the version
                rest = directive.group(3).strip().split(" ", 1)
                if len(rest) == 2:
                    para.append(rest[1])
            elif name in {"note", "warning", "seealso", "attention", "caution", "tip",
                          "important", "hint", "admonition", "topic", "sidebar", "rubric"}:
                if directive.group(3).strip():
                    para.append(directive.group(3).strip())
            continue  # description directives (function, class, ...): their signature goes
        if _COMMENT.match(line):
            close_paragraph()
            skip_below = _indent(line)
            continue
        if _OPTION.match(line) and not para:
            continue
        item = _ITEM.match(line)
        if item or (para and _indent(line) != text_indent):
            close_paragraph()
        if not para:
            text_indent = item.end() if item else _indent(line)
        para.append(stripped)
    close_paragraph()
    if len(" ".join(doc).split()) >= MIN_DOCUMENT_WORDS:
        yield doc


# ---- PostgreSQL: DocBook-generated HTML ------------------------------------------------------

_HTML_SKIPPED = {"pre", "table", "script", "style", "head"}  # code listings, tables, navigation
_HTML_SKIPPED_CLASSES = {"navheader", "navfooter", "toc", "index"}
_HTML_BLOCKS = {"p", "li", "dt", "dd", "div", "blockquote", "br", "tr", "h4", "h5", "h6"}
_HTML_HEADINGS = {"h1", "h2", "h3"}


class _HtmlSections(html.parser.HTMLParser):
    """HTML -> sections (lists of paragraphs); what is inside _HTML_SKIPPED tags or divs of
    _HTML_SKIPPED_CLASSES is left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.docs: list[list[str]] = []
        self.doc: list[str] = []
        self.text: list[str] = []
        self.skip_stack: list[str] = []  # tags opened inside a skipped element (incl. it)
        self.in_heading = False

    def _flush(self) -> None:
        para = " ".join("".join(self.text).split())
        self.text.clear()
        if para:
            self.doc.append(para)

    def _end_doc(self) -> None:
        self._flush()
        if len(" ".join(self.doc).split()) >= MIN_DOCUMENT_WORDS:
            self.docs.append(self.doc)
        self.doc = []

    def handle_starttag(self, tag, attrs):
        if self.skip_stack:
            if tag not in _VOID:
                self.skip_stack.append(tag)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in _HTML_SKIPPED or (tag == "div" and classes & _HTML_SKIPPED_CLASSES):
            self._flush()
            self.skip_stack.append(tag)
        elif tag in _HTML_HEADINGS:
            self._end_doc()
        elif tag in _HTML_BLOCKS:
            self._flush()

    def handle_endtag(self, tag):
        if self.skip_stack:
            # pop to the matching tag (HTML may leave some unclosed); a void element's end
            # (XHTML's `<col />`) was never pushed
            if tag in self.skip_stack:
                while self.skip_stack.pop() != tag:
                    pass
            return
        if tag in _HTML_BLOCKS or tag in _HTML_HEADINGS:
            self._flush()

    def handle_data(self, data):
        if not self.skip_stack:
            self.text.append(data)

    def close(self):
        super().close()
        self._end_doc()


_VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"}


def html_documents(text: str) -> list[list[str]]:
    """The sections of one HTML page, each as its paragraphs."""
    parser = _HtmlSections()
    parser.feed(text)
    parser.close()
    return parser.docs


# ---- the corpus ---------------------------------------------------------------------------------


def documents(name: str, text: str) -> Iterable[list[str]]:
    return html_documents(text) if name.endswith(".html") else rst_documents(text)


def write_corpus(sources: Iterable[tuple[str, str]], out: Path) -> dict:
    """(file name, its text) pairs -> `out`, one section per document. Returns the record."""
    tmp = out.with_suffix(".tmp")
    num_docs = num_words = 0
    with tmp.open("w", encoding="utf-8") as f:
        for name, text in sources:
            for doc in documents(name, text):
                if num_docs:
                    f.write("\n")
                f.write("\n".join(doc) + "\n")
                num_docs += 1
                num_words += sum(len(p.split()) for p in doc)
    tmp.replace(out)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    return {"documents": num_docs, "words": num_words, "bytes": out.stat().st_size,
            "sha256": sha}


def deb_sources(deb: Path, folder: str) -> Iterator[tuple[str, str]]:
    """The .rst.txt / .html files under `folder` inside a .deb, sorted by name (needs dpkg-deb)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.tar"
        with data.open("wb") as f:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, stdout=f)
        with tarfile.open(data) as tar:
            members = sorted((m for m in tar.getmembers()
                              if m.isfile() and folder in m.name
                              and m.name.endswith((".rst.txt", ".html"))),
                             key=lambda m: m.name)
            for m in members:
                name = m.name.split(folder, 1)[1]
                if name not in EXCLUDE:
                    yield name, tar.extractfile(m).read().decode("utf-8")


def download(package: str, dest: Path) -> Path:
    """`apt-get download PACKAGE` into `dest`; a clear error if apt cannot."""
    if shutil.which("apt-get") is None:
        sys.exit(f"error: apt-get not found; download the Debian package {package} by hand and "
                 f"pass it with --deb FILE.deb")
    done = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True,
                          text=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        sys.exit(f"error: `apt-get download {package}` failed ({done.stderr.strip()[-300:]}); "
                 f"run `apt-get update` first, or pass a downloaded .deb with --deb")
    return debs[-1]


def build(debs: list[Path], out: Path) -> dict:
    """Write the corpus from the two packages (`debs`, or downloaded) and its record."""
    given = {deb.name.split("_", 1)[0]: deb for deb in debs}
    unknown = set(given) - set(PACKAGES)
    if unknown:
        sys.exit(f"error: --deb {sorted(unknown)}: expected the packages {sorted(PACKAGES)}")
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            given.setdefault(package, download(package, Path(tmp)))

        def sources():
            for package, folder in PACKAGES.items():
                yield from deb_sources(given[package], folder)

        record = write_corpus(sources(), out)
    record["packages"] = [given[p].name for p in PACKAGES]
    Path(f"{out}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def ensure(out: Path = CORPUS) -> Path:
    """The corpus, built first if it is not there (what the benchmarks call)."""
    if not out.exists():
        record = build([], out)
        print(f"built {out}: {record['words']:,} words (sha256 {record['sha256'][:12]})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deb", type=Path, action="append", default=[],
                        help="a downloaded .deb of one of the packages (repeat for both)")
    parser.add_argument("--output", type=Path, default=CORPUS)
    args = parser.parse_args()
    record = build(args.deb, args.output)
    print(f"{args.output}: {record['documents']:,} documents, {record['words']:,} words, "
          f"{record['bytes']:,} bytes, sha256 {record['sha256']} (from "
          f"{', '.join(record['packages'])})")


if __name__ == "__main__":
    main()
