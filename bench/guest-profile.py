#!/usr/bin/env python3
"""bench/guest-profile.py VMLINUX [LOG] [--window MS] [--top N]

Resolves the guest profiler's samples (`RKT_VMM_PROFILE=<us> stage1-vmm ...` prints
`rkt-vmm-sample <us> <vcpu> <rip>` lines on stderr; docs/vmm.md, "Where the time goes")
against VMLINUX's symbols (`nm -n`) and prints the functions that hold most samples, then,
per time window (default 100 ms), the window's samples and its top three functions.
Reads LOG, or standard input."""
import bisect
import collections
import subprocess
import sys


def symbols(vmlinux):
    out = subprocess.run(["nm", "-n", vmlinux], check=True, capture_output=True, text=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def main(argv):
    args = [a for a in argv[1:]]
    window_ms, top = 100.0, 25
    for flag in ("--window", "--top"):
        if flag in args:
            i = args.index(flag)
            value = float(args[i + 1])
            del args[i:i + 2]
            if flag == "--window":
                window_ms = value
            else:
                top = int(value)
    if not args:
        sys.exit(__doc__)
    addrs, names = symbols(args[0])
    src = open(args[1]) if len(args) > 1 else sys.stdin
    samples = []
    for line in src:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "rkt-vmm-sample":
            rip = int(parts[3], 16)
            i = bisect.bisect_right(addrs, rip) - 1
            name = names[i] if i >= 0 and rip >= 0xFFFFFFFF80000000 else "(user)" if rip < 1 << 47 else "?"
            samples.append((int(parts[1]) / 1000.0, name))
    if not samples:
        sys.exit("no rkt-vmm-sample lines")
    total = collections.Counter(n for _, n in samples)
    print(f"{len(samples)} samples over {samples[-1][0]:.0f} ms")
    for name, n in total.most_common(top):
        print(f"{n:6d} {100.0 * n / len(samples):5.1f}%  {name}")
    print(f"\nper {window_ms:.0f} ms window:")
    windows = collections.defaultdict(collections.Counter)
    for ms, name in samples:
        windows[int(ms // window_ms)][name] += 1
    for w in sorted(windows):
        c = windows[w]
        tops = ", ".join(f"{n} {k}" for k, n in c.most_common(3))
        print(f"{w * window_ms:8.0f} ms {sum(c.values()):5d}  {tops}")


if __name__ == "__main__":
    main(sys.argv)
