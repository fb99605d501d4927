"""The second development corpus's builder (corpus/build_techdocs.py): reST and HTML reduced to
prose, one paragraph a line, one section a document; a package that cannot be fetched is a clear
error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "corpus"))

import build_techdocs  # noqa: E402

RST = """\
:mod:`json` --- JSON encoder and decoder
========================================

.. module:: json
   :synopsis: Encode and decode the JSON format.

.. sectionauthor:: Somebody <x@example.org>

`JSON (JavaScript Object Notation) <https://json.org>`_, specified by
:rfc:`7159`, is a lightweight data interchange format inspired by
JavaScript object literal syntax [#errata]_.

.. warning::
   Be cautious when parsing JSON data from untrusted sources, as
   :pep:`8` would say.

Encoding basic Python object hierarchies::

    >>> import json
    >>> json.dumps(['foo'])

* The first item of a list that goes on
  over two lines.
* A second item with ``code`` in it.

.. function:: dumps(obj, *, skipkeys=False)

   Serialize *obj* to a JSON formatted :class:`str` using this
   :ref:`conversion table <py-to-json-table>`.

   .. versionchanged:: 3.6 All optional parameters are now keyword-only.

   .. code-block:: shell-session

      $ python -m json.tool

+-------+--------+
| JSON  | Python |
+=======+========+
| object| dict   |
+-------+--------+

Basic Usage
-----------

>>> print(json.dumps({"a": 1}))
{"a": 1}

Short.
"""

EXPECTED_FIRST = [
    "json --- JSON encoder and decoder",
    "JSON (JavaScript Object Notation), specified by RFC 7159, is a lightweight data "
    "interchange format inspired by JavaScript object literal syntax.",
    "Be cautious when parsing JSON data from untrusted sources, as PEP 8 would say.",
    "Encoding basic Python object hierarchies:",
    "* The first item of a list that goes on over two lines.",
    "* A second item with code in it.",
    "Serialize obj to a JSON formatted str using this conversion table.",
    "All optional parameters are now keyword-only.",
]


def test_rst_keeps_the_prose_and_drops_code_tables_and_markup():
    docs = list(build_techdocs.rst_documents(RST))
    # "Basic Usage" holds one word of prose under its heading: too short to be a document
    assert docs == [EXPECTED_FIRST]


HTML = """<?xml version="1.0"?><html><head><title>2.2. Concepts</title></head><body>
<div class="navheader"><table><tr><td><a href="x.html">Prev</a></td></tr></table></div>
<div class="sect1"><h2 class="title">2.2. Concepts</h2>
<p><a id="x" class="indexterm"></a>
    <span class="productname">PostgreSQL</span> is a <em class="firstterm">relational
    database management system</em> (<acronym>RDBMS</acronym>). That means it is a system for
    managing data stored in relations.</p>
<pre class="programlisting">SELECT * FROM weather;</pre>
<div class="table"><table><colgroup><col /><col /></colgroup><tr><td>size</td><td>int8</td></tr>
</table></div>
<ul><li><p>Each table is a named collection of rows, and each row has the same columns.</p></li>
</ul></div>
<div class="navfooter"><table><tr><td>Next</td></tr></table></div></body></html>"""


def test_html_keeps_the_prose_and_drops_navigation_listings_and_tables():
    assert build_techdocs.html_documents(HTML) == [[
        "2.2. Concepts",
        "PostgreSQL is a relational database management system (RDBMS). That means it is a "
        "system for managing data stored in relations.",
        "Each table is a named collection of rows, and each row has the same columns.",
    ]]


def test_write_corpus_separates_documents_by_a_blank_line(tmp_path):
    out = tmp_path / "techdocs.txt"
    record = build_techdocs.write_corpus([("library/json.rst.txt", RST), ("a.html", HTML)], out)
    text = out.read_text()
    assert text == "\n".join(EXPECTED_FIRST) + "\n\n" + "\n".join(
        build_techdocs.html_documents(HTML)[0]) + "\n"
    assert record["documents"] == 2 and record["words"] == len(text.split())


def test_an_unknown_package_is_refused_before_anything_is_written(tmp_path):
    deb = tmp_path / "python3.12-doc_3.12.1_all.deb"
    deb.write_bytes(b"")
    with pytest.raises(SystemExit, match="expected the packages"):
        build_techdocs.build([deb], tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_a_failed_download_names_the_package_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(build_techdocs.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get not found.*python3.11-doc.*--deb"):
        build_techdocs.download("python3.11-doc", tmp_path)
