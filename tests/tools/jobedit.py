#!/usr/bin/env python3
"""tests/tools/jobedit.py IN OUT FIELD=VALUE...: a job file with manifest fields changed and its
checksum made to match, so that mplrun's own checks of the fields (not the checksum) are what
a test sees. FIELD: dp, pp, tp, nstages, batch, seq, microbatches, synthetic_n.

The layout read here is runtime/jobfile.c's: a 32-byte header (the FNV-1a checksum of every
byte after it at 24..32), then sections of a 4-byte tag, 4 bytes, an 8-byte length and the
body, each padded to 8 bytes; the MANI body starts with two strings (a 4-byte length, the
bytes, a NUL), the mesh (dp, pp, tp, stages: 4 bytes each), the data kind (1 byte), a
string, then synthetic n, batch, seq and micro-batches (8 bytes each)."""
import struct
import sys


def checksum(body):
    h = 0xCBF29CE484222325
    for c in body:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def manifest_fields(b):
    at = 32
    while at < len(b):
        tag, n = bytes(b[at:at + 4]), struct.unpack_from('<Q', b, at + 8)[0]
        if tag == b'MANI':
            break
        at += 16 + n
        at += -at % 8
    else:
        sys.exit("jobedit: no MANI section")
    p = at + 16
    for _ in range(2):
        p += 4 + struct.unpack_from('<I', b, p)[0] + 1
    fields = {'dp': (p, '<I'), 'pp': (p + 4, '<I'), 'tp': (p + 8, '<I'), 'nstages': (p + 12, '<I')}
    p += 17
    p += 4 + struct.unpack_from('<I', b, p)[0] + 1
    for i, name in enumerate(['synthetic_n', 'batch', 'seq', 'microbatches']):
        fields[name] = (p + 8 * i, '<q')
    return fields


def main():
    b = bytearray(open(sys.argv[1], 'rb').read())
    fields = manifest_fields(b)
    for kv in sys.argv[3:]:
        name, value = kv.split('=')
        at, fmt = fields[name]
        struct.pack_into(fmt, b, at, int(value, 0))
    struct.pack_into('<Q', b, 24, checksum(b[32:]))
    open(sys.argv[2], 'wb').write(b)


main()
