"""Compare a dossier PDF with a fresh rendering of its evidence, page by page and as a whole file.

Each page is read as a tree (content stream, resources with every image and font by digest,
annotations, page attributes), as are the catalog, the document information and the trailer; the
two trees must be equal. Only what WeasyPrint varies between two renderings of the same evidence is
normalised (measured on WeasyPrint 70): the creation and modification dates of embedded files, the
timestamps and checksum adjustment in each embedded font's ``head`` table, and the file identifier.
The file's structure is compared too: a change appended after rendering adds an end-of-file marker
and a cross-reference section.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# Keys that only encode how an object is stored (or point back up the tree), never what is shown.
_SKIPPED = frozenset({"/Length", "/Filter", "/DecodeParms", "/DL", "/Parent"})
_FONT_FILES = frozenset({"/FontFile", "/FontFile2", "/FontFile3"})
_DATES = frozenset({"/CreationDate", "/ModDate"})
_TRAILER_STRUCTURE = frozenset(
    {"/ID", "/Size", "/Prev", "/XRefStm", "/Root", "/Info", "/Type", "/Index", "/W", *_SKIPPED}
)
_MAX_DEPTH = 48  # nested indirect objects followed; deeper ones are cut, the same way on both sides
_SFNT_SIGNATURES = (b"\x00\x01\x00\x00", b"OTTO", b"true", b"typ1")

_OBJECT = re.compile(rb"(?<![0-9])[0-9]+ [0-9]+ obj\b")


def compare_pages(pdf_bytes: bytes, rerendered_bytes: bytes) -> list[str]:
    """The differences between a dossier PDF and a fresh rendering of the evidence it embeds, in
    words; an empty list when they show the same thing.

    Compared: the page count; every page as a whole (its content stream, every resource with
    images and fonts by digest, annotations, boxes and other attributes); the catalog (embedded
    files, outline, metadata, actions, forms), the document information and the trailer; and the
    file structure (revisions, cross-reference sections and object definitions: anything appended
    after rendering, or objects a viewer might pick instead of the ones read here). pypdf's errors
    propagate for a file it cannot read: the caller reports it as unreadable.
    """
    from pypdf import PdfReader

    shown, fresh = PdfReader(io.BytesIO(pdf_bytes)), PdfReader(io.BytesIO(rerendered_bytes))
    found = _structure(pdf_bytes, rerendered_bytes)
    n_shown, n_fresh = len(shown.pages), len(fresh.pages)
    if n_shown != n_fresh:
        found.append(f"the dossier has {n_shown} pages where a rendering of its evidence has {n_fresh}")
    build_a, build_b = _Builder(shown), _Builder(fresh)
    per_subject: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index in range(min(n_shown, n_fresh)):
        a, b = build_a.page(shown.pages[index]), build_b.page(fresh.pages[index])
        if a.digest == b.digest:
            continue
        if a.child("/Contents") != b.child("/Contents"):
            hint = _text_difference(shown.pages[index], fresh.pages[index])
            per_subject[("content", hint)].append(index + 1)
        for subject, words in _describe(a, b):
            per_subject[(subject, words)].append(index + 1)
    found += [f"{_pages(numbers)}: {subject} {words}" for (subject, words), numbers in per_subject.items()]
    for part, a, b in _document_parts(shown, fresh, build_a, build_b):
        found += [f"{part}: {subject} {words}" for subject, words in _describe(a, b)]
    return found


def rendered_revision(pdf_bytes: bytes) -> bytes:
    """The file as first written, before any incremental update: the bytes up to its first
    end-of-file marker (and the line end after it). For a dossier signed by ``sign_pdf`` this is
    the rendering that was signed, to compare with a fresh rendering of the evidence."""
    end = pdf_bytes.find(b"%%EOF")
    if end < 0:
        return pdf_bytes
    end += 5
    while end < len(pdf_bytes) and pdf_bytes[end : end + 1] in (b"\r", b"\n"):
        end += 1
    return pdf_bytes[:end]


# ---------------------------------------------------------------- file structure


def _structure(pdf: bytes, fresh: bytes) -> list[str]:
    """Revisions and bytes around them: an incremental update appends an %%EOF and an xref section."""
    found = []
    eof_a, eof_b = pdf.count(b"%%EOF"), fresh.count(b"%%EOF")
    xref_a, xref_b = pdf.count(b"startxref"), fresh.count(b"startxref")
    if (eof_a, xref_a) != (eof_b, xref_b):
        found.append(
            f"the file holds {eof_a} end-of-file marker(s) and {xref_a} cross-reference section(s) where "
            f"a rendering holds {eof_b} and {xref_b}: it was changed after rendering (incremental update)"
        )
    objects_a, objects_b = len(_OBJECT.findall(pdf)), len(_OBJECT.findall(fresh))
    if objects_a != objects_b:
        found.append(f"the file defines {objects_a} objects where a rendering defines {objects_b}")
    for label, payload in (("the dossier", pdf), ("the rendering", fresh)):
        start = payload.find(b"%PDF-")
        if start != 0:
            found.append(f"{label} does not start with the PDF header ({max(start, 0)} bytes before it)")
    tail_a, tail_b = _tail(pdf), _tail(fresh)
    if tail_a != tail_b:
        found.append(f"the dossier holds {len(tail_a)} byte(s) after its last end-of-file marker")
    if pdf.split(b"\n", 1)[0].strip() != fresh.split(b"\n", 1)[0].strip():
        found.append(f"the PDF header is {pdf[:8]!r} where a rendering has {fresh[:8]!r}")
    return found


def _tail(payload: bytes) -> bytes:
    end = payload.rfind(b"%%EOF")
    return payload[end + 5 :].strip() if end >= 0 else payload[-64:]


# ---------------------------------------------------------------- trees


@dataclass(frozen=True)
class _Node:
    """A PDF object as compared: a digest of everything below it, its own value (a scalar, a
    stream's digest) and its children by key (``/Key`` or ``[i]``)."""

    digest: str
    value: str | None
    children: tuple[tuple[str, _Node], ...] = ()

    def child(self, key: str) -> _Node | None:
        return next((node for k, node in self.children if k == key), None)


def _node(value: str | None, children: tuple[tuple[str, _Node], ...] = ()) -> _Node:
    digest = hashlib.sha256(repr(value).encode())
    for key, child in children:
        digest.update(f"\x00{key}\x00{child.digest}".encode())
    return _Node(digest.hexdigest(), value, children)


class _Builder:
    """Builds the nodes of one PDF. Each indirect object is read once (pages share resources);
    a link to a page is its page number, and a reference back up the tree is cut."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.pages: dict[int, int] = {}
        for index, page in enumerate(reader.pages):
            if page.indirect_reference is not None:
                self.pages[page.indirect_reference.idnum] = index + 1
        self.memo: dict[tuple[int, str], _Node] = {}

    def page(self, page: Any) -> _Node:
        """A page with its inherited attributes; its content streams compared as one."""
        children = [
            (str(k), self.build(_raw(page, k), str(k), ())) for k in sorted(page) if k not in _SKIPPED
        ]
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
        children = [c for c in children if c[0] != "/Contents"]
        children.append(("/Contents", _node(f"content sha256 {hashlib.sha256(data).hexdigest()}")))
        return _node(None, tuple(sorted(children)))

    def build(self, obj: Any, key: str, stack: tuple[int, ...]) -> _Node:
        from pypdf.generic import IndirectObject

        if not isinstance(obj, IndirectObject):
            return self._direct(obj, key, stack)
        if obj.idnum in self.pages:
            return _node(f"page {self.pages[obj.idnum]}")  # a link to a page, not the page again
        if obj.idnum in stack or len(stack) >= _MAX_DEPTH:
            return _node("(reference back up the tree)")
        memo = (obj.idnum, key)
        if memo not in self.memo:
            self.memo[memo] = self._direct(obj.get_object(), key, (*stack, obj.idnum))
        return self.memo[memo]

    def _direct(self, obj: Any, key: str, stack: tuple[int, ...]) -> _Node:
        from pypdf.generic import ArrayObject, StreamObject

        if isinstance(obj, dict):
            value = f"stream sha256 {_stream_digest(obj, key)}" if isinstance(obj, StreamObject) else None
            children = tuple(
                (str(k), self.build(_raw(obj, k), str(k), stack))
                for k in sorted(obj)
                if k not in _SKIPPED and not (key == "/Params" and k in _DATES)
            )
            return _node(value, children)
        if isinstance(obj, ArrayObject):
            items = tuple((f"[{i}]", self.build(item, key, stack)) for i, item in enumerate(obj))
            return _node(None if items else "[]", items)
        return _node(_scalar(obj))


def _document_parts(
    shown: Any, fresh: Any, build_a: _Builder, build_b: _Builder
) -> list[tuple[str, _Node, _Node]]:
    """Catalog (with the page tree's own attributes and the outline), document information and
    trailer."""
    parts = []
    for part, key in (("document catalog", "/Root"), ("document information", "/Info")):
        a, b = _raw(shown.trailer, key), _raw(fresh.trailer, key)
        node_a = build_a.build(a, key, ()) if a is not None else _node("absent")
        node_b = build_b.build(b, key, ()) if b is not None else _node("absent")
        if key == "/Root":
            node_a, node_b = _with_outline(node_a, shown), _with_outline(node_b, fresh)
        parts.append((part, node_a, node_b))
    trailer_a = {k: _raw(shown.trailer, k) for k in shown.trailer if k not in _TRAILER_STRUCTURE}
    trailer_b = {k: _raw(fresh.trailer, k) for k in fresh.trailer if k not in _TRAILER_STRUCTURE}
    parts.append(("trailer", build_a.build(trailer_a, "", ()), build_b.build(trailer_b, "", ())))
    return parts


def _with_outline(catalog: _Node, reader: Any) -> _Node:
    """The catalog with its outline (bookmarks) as a list of entries: depth, title and target page.
    Read as a list rather than walked as linked objects, so a long outline costs no recursion."""
    entries = []
    stack: list[tuple[int, Any]] = [(0, item) for item in reversed(reader.outline)]
    while stack:
        depth, item = stack.pop()
        if isinstance(item, list):
            stack += [(depth + 1, child) for child in reversed(item)]
            continue
        page = reader.get_destination_page_number(item)
        target = f"page {page + 1}" if page is not None and page >= 0 else "no page"
        entries.append(_node(f"{'  ' * depth}{item.title!r} -> {target}"))
    outline = _node(None, tuple((f"[{i}]", e) for i, e in enumerate(entries)))
    children = tuple(c for c in catalog.children if c[0] != "/Outlines") + (("/Outlines", outline),)
    return _node(catalog.value, tuple(sorted(children)))


Place = tuple[tuple[str, ...], "_Node | None", "_Node | None"]  # path, in the dossier, in the rendering


def _diff(a: _Node | None, b: _Node | None, path: tuple[str, ...]) -> list[Place]:
    """The places where two nodes differ; a subtree present on one side only is one place."""
    if a is None or b is None:
        return [(path, a, b)]
    if a.digest == b.digest:
        return []
    found: list[Place] = [(path, a, b)] if a.value != b.value else []
    keys_a, keys_b = dict(a.children), dict(b.children)
    for key in sorted(set(keys_a) | set(keys_b)):
        found += _diff(keys_a.get(key), keys_b.get(key), (*path, key))
    return found


def _at(node: _Node | None, path: tuple[str, ...]) -> _Node | None:
    for key in path:
        node = node.child(key) if node is not None else None
    return node


def _raw(obj: Any, key: str) -> Any:
    """A dictionary entry as stored: an indirect reference stays a reference (pypdf resolves it
    on indexing), so shared objects are read once and links to pages stay links."""
    return obj.raw_get(key) if hasattr(obj, "raw_get") else obj.get(key)


def _scalar(obj: Any) -> str:
    from pypdf.generic import ByteStringObject, TextStringObject

    if isinstance(obj, TextStringObject):
        return repr(str(obj))
    if isinstance(obj, ByteStringObject):
        return "<" + bytes(obj).hex() + ">"
    return str(obj)


def _stream_digest(stream: Any, key: str) -> str:
    try:
        data = stream.get_data()
    except Exception:  # an undecodable stream compares by its stored bytes
        data = stream._data  # noqa: SLF001
    if key in _FONT_FILES:
        data = _normalised_font(data)
    return hashlib.sha256(data).hexdigest()


def _normalised_font(data: bytes) -> bytes:
    """An sfnt font with the ``head`` table's checksum adjustment and timestamps zeroed, and the
    table directory's checksum of ``head`` zeroed: the subsetter stamps them with the time."""
    if len(data) < 12 or data[:4] not in _SFNT_SIGNATURES:
        return data
    font = bytearray(data)
    (tables,) = struct.unpack(">H", data[4:6])
    for i in range(tables):
        entry = 12 + 16 * i
        if entry + 16 > len(font):
            break
        tag, _, offset, length = struct.unpack(">4sLLL", bytes(font[entry : entry + 16]))
        if tag == b"head" and length >= 36 and offset + 36 <= len(font):
            font[entry + 4 : entry + 8] = bytes(4)  # table checksum
            font[offset + 8 : offset + 12] = bytes(4)  # checkSumAdjustment
            font[offset + 20 : offset + 36] = bytes(16)  # created, modified
    return bytes(font)


# ---------------------------------------------------------------- words


def _describe(a: _Node, b: _Node) -> list[tuple[str, str]]:
    """Say, per thing that differs (an annotation, an image, a font, an attribute), whether it was
    added, removed or changed, and its first change."""
    found: dict[tuple[str, ...], str] = {}
    for path, in_a, in_b in _diff(a, b, ()):
        subject = _subject(path)
        if path[:1] == ("/Contents",) or subject in found:
            continue  # the content stream is described with the page's text
        if path == subject and in_b is None:
            found[subject] = f"added ({_summary(in_a)})"
        elif path == subject and in_a is None:
            found[subject] = f"removed ({_summary(in_b)})"
        else:
            where = "".join(path[len(subject) :]) or "value"
            found[subject] = f"changed: {where} is {_shown(in_a)} where a rendering has {_shown(in_b)}"
    return [(_name(subject, _at(a, subject) or _at(b, subject)), words) for subject, words in found.items()]


def _subject(path: tuple[str, ...]) -> tuple[str, ...]:
    """What a place belongs to: (/Annots, [i]), (/Resources, /XObject, /Im1), or (/Key,)."""
    if len(path) >= 2 and path[0] == "/Annots":
        return path[:2]
    if len(path) >= 3 and path[0] == "/Resources":
        return path[:3]
    return path[:1]


def _name(subject: tuple[str, ...], node: _Node | None) -> str:
    if subject[:1] == ("/Annots",) and len(subject) == 2:
        return f"annotation {int(subject[1][1:-1]) + 1}"
    if subject[:2] == ("/Resources", "/XObject") and len(subject) == 3:
        subtype = _at(node, ("/Subtype",))
        kind = "image" if subtype is not None and subtype.value == "/Image" else "drawing (form XObject)"
        return f"{kind} {subject[2]}"
    if subject[:2] == ("/Resources", "/Font") and len(subject) == 3:
        return f"font {subject[2]}"
    return " ".join(subject) or "entry"


def _summary(node: _Node | None) -> str:
    if node is None:
        return "absent"
    shown = []
    for key in ("/Subtype", "/Contents", "/Rect", "/Width", "/Height"):
        child = node.child(key)
        if child is not None:
            shown.append(f"{key[1:]} {_shown(child)}")
    return ", ".join(shown) or _shown(node)


def _shown(node: _Node | None, limit: int = 80) -> str:
    """A node in words: its value, or its leaves' values joined."""
    if node is None:
        return "absent"
    if node.value is not None and not node.children:
        return node.value[:limit]
    parts = [node.value] if node.value else []
    parts += [_shown(child, limit) for _, child in node.children[:8]]
    text = " ".join(p for p in parts if p)
    return (text[:limit] + "…") if len(text) > limit else text


def _pages(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"page {numbers[0]}"
    runs = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return "pages " + ", ".join(runs)


def _text_difference(shown: Any, fresh: Any) -> str:
    """Where the text of two differing page content streams first differs (whitespace ignored)."""
    a = "".join(shown.extract_text().split())
    b = "".join(fresh.extract_text().split())
    if a == b:
        return "stream differs (drawing or layout; the text is the same)"
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"stream differs: the page shows '…{_clip(a, at)}…' where the evidence renders '…{_clip(b, at)}…'"


def _clip(text: str, at: int) -> str:
    return re.sub(r"[\x00-\x1f]", "?", text[max(0, at - 30) : at + 30])
