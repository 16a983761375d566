"""Documents from files: .txt, .md, .html/.htm, .pdf (pypdf) and .docx (python-docx) → plain text.

HTML keeps the main text only (no script, style, nav, header, footer or aside). trafilatura extracts it;
on a page too small or too odd for its main-content heuristics (it returns nothing) BeautifulSoup's text
of the page with those elements removed is used instead. Measured on the test pages
(tests/test_documents.py::test_html_main_text_only): both drop scripts and styles; only trafilatura also
drops the boilerplate that has no semantic tag (cookie banners, "share this" rows), so it comes first.

Every failure is a UserError with one line: missing file, unknown extension, a binary or undecodable
file posing as text, a damaged PDF/DOCX, or a document with no text at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pocketlm.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + (".pdf", ".docx")
_BOILERPLATE_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template")


def load_document(path: str | os.PathLike) -> str:
    """The text of a document file, whitespace-normalised (paragraphs kept). UserError on anything
    unreadable, binary or empty."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"document not found: {p}")
    if not p.is_file():
        raise UserError(f"not a file: {p}")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{p}: unsupported document type {suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(SUFFIXES)}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror or e}") from None
    if not data.strip():
        raise UserError(f"{p} is empty")
    if suffix == ".pdf":
        text = _pdf_text(p, data)
    elif suffix == ".docx":
        text = _docx_text(p, data)
    else:
        raw = _decode_text(p, data)
        text = html_main_text(raw) if suffix in HTML_SUFFIXES else raw
    text = normalize_text(text)
    if not text:
        raise UserError(f"{p} has no text")
    return text


def normalize_text(text: str) -> str:
    """Collapse runs of spaces inside lines and of blank lines between paragraphs; strip the ends."""
    lines = [re.sub(r"[ \t\f\v\u00a0]+", " ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode_text(p: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UserError(f"{p} looks binary (NUL bytes), not a {p.suffix} text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p} is not UTF-8 text (byte {e.start}); is it binary?") from None
    controls = sum(ch < " " and ch not in "\n\r\t\f" for ch in text[:8192])
    if controls > 0.01 * min(len(text), 8192):
        raise UserError(f"{p} looks binary (control characters), not a {p.suffix} text file")
    return text


def html_main_text(html: str) -> str:
    """The main text of an HTML page: trafilatura, or BeautifulSoup without boilerplate elements."""
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if text and text.strip():
        return text
    return html_soup_text(html)


def html_soup_text(html: str) -> str:
    """The text of a page with script/style/nav/header/footer/aside (and forms) removed."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    for tag in soup(_BOILERPLATE_TAGS):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    return root.get_text("\n", strip=True)


def _pdf_text(p: Path, data: bytes) -> str:
    import io

    from pypdf import PdfReader

    if not data.startswith(b"%PDF"):
        raise UserError(f"{p} is not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UserError(f"{p} is an encrypted PDF; decrypt it first")
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- pypdf raises many types on damaged files; all mean "unreadable"
        raise UserError(f"{p} is not a readable PDF ({type(e).__name__}: {str(e)[:80]})") from None


def _docx_text(p: Path, data: bytes) -> str:
    import io

    import docx

    if not data.startswith(b"PK"):
        raise UserError(f"{p} is not a .docx file (not a zip archive)")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 -- python-docx raises many types on damaged files; all mean "unreadable"
        raise UserError(f"{p} is not a readable .docx ({type(e).__name__}: {str(e)[:80]})") from None
    parts = [para.text for para in document.paragraphs]
    for table in document.tables:  # tables are not in .paragraphs
        parts += [" | ".join(cell.text for cell in row.cells) for row in table.rows]
    return "\n\n".join(t for t in parts if t.strip())
