"""Where an image file's own data ends, so that uploads with something appended (polyglots) can be refused.

A PNG with a ZIP after its IEND chunk, a GIF with a JAR after its trailer or a JPEG with a script
after its end marker is still a valid image to every decoder, and a valid archive or page to
whatever reads it from the other end. Each function walks the format's own structure from the
start and returns the offset just past the image, or None when the structure cannot be followed
(the decoder then judges the file). TIFF keeps its parts at offsets anywhere in the file and has
no end to find; it is not checked.
"""
from __future__ import annotations

import struct

__all__ = ["image_end", "trailing_payload"]

# Bytes some writers pad files with; a tail of only these carries nothing.
PADDING = frozenset(b"\x00\xff\r\n ")


def png_end(data: bytes) -> int | None:
    """Offset just past the IEND chunk."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return pos if pos <= len(data) else None
    return None


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the EOI marker that closes the image (segments skipped by their lengths)."""
    pos = 2
    size = len(data)
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            return None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
        if marker == 0xDA:
            # Entropy-coded data runs to the next 0xFF that starts a real marker: not a stuffed 0xFF00,
            # not a restart marker, not a fill byte.
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return None
                following = data[pos + 1]
                if following == 0xFF:
                    pos += 1
                elif following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos += 2
                else:
                    break
    return None


def gif_end(data: bytes) -> int | None:
    """Offset just past the trailer byte (0x3B)."""
    if len(data) < 13:
        return None
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    size = len(data)

    def skip_sub_blocks(at: int) -> int:
        while at < size and data[at] != 0:
            at += data[at] + 1
        return at + 1

    while pos < size:
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            if pos + 10 > size:
                return None
            local = data[pos + 9]
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)
        else:
            return None
    return None


def webp_end(data: bytes) -> int | None:
    """Offset just past the RIFF chunk (its size field, padded to even)."""
    if len(data) < 12:
        return None
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size + (riff_size & 1)
    return end if end <= len(data) + 1 else None


def bmp_end(data: bytes) -> int | None:
    """Offset the header gives as the file size (0 in files of some writers: not checked)."""
    if len(data) < 6:
        return None
    (file_size,) = struct.unpack("<I", data[2:6])
    return file_size if 0 < file_size <= len(data) else None


_ENDS = {"PNG": png_end, "JPEG": jpeg_end, "GIF": gif_end, "WEBP": webp_end, "BMP": bmp_end}


def image_end(data: bytes, image_format: str | None) -> int | None:
    """Offset just past the image in `data` of PIL format `image_format`, or None if it cannot be told."""
    finder = _ENDS.get(image_format or "")
    if finder is None:
        return None
    try:
        return finder(data)
    except (struct.error, IndexError):
        return None


def trailing_payload(data: bytes, image_format: str | None) -> int:
    """How many bytes follow the image that are more than padding (0: none, or the end is unknown)."""
    end = image_end(data, image_format)
    if end is None or end >= len(data):
        return 0
    tail = data[end:]
    return 0 if set(tail) <= PADDING else len(tail)
