"""Package the Hamerly et al. 2019 NTT-CIM measurements for kpp_sdk (run once; the output is
committed under kpp_sdk/data/hardware/hamerly2019).

    python tools/package_hamerly2019.py SRC_DIR

SRC_DIR is the data folder distributed with the paper (files ntt_success_sk.tsv,
ntt_success_cubic.tsv, ground_sk.tsv, ground_cubic.tsv, sk/, cubic/; see SOURCE.txt in the
output). Writes instances.npz (one int8 weight matrix W per instance, key "<class>_N<n>_<k>",
J = -W), measurements.tsv in the kpp measurement format (docs/validation.md) and checks every
ground state against its energy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "kpp_sdk" / "data" / "hardware" / "hamerly2019"


def read_instance(path: Path) -> np.ndarray:
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    n, m = (int(float(x)) for x in lines[0][:2])
    W = np.zeros((n, n), dtype=np.int8)
    for row in lines[1 : m + 1]:
        i, j, w = int(float(row[0])) - 1, int(float(row[1])) - 1, int(round(float(row[2])))
        W[i, j] = W[j, i] = w
    return W


def read_tsv(path: Path) -> list[list[str]]:
    rows = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    return rows[1:]


def main(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ground = {}
    for cls in ("sk", "cubic"):
        for r in read_tsv(src / f"ground_{cls}.tsv"):
            ground[(cls, int(r[0]), int(r[1]))] = (float(r[-2]) / 2.0, r[-1].strip())
    arrays, rows = {}, []
    for cls, fname in (("sk", "ntt_success_sk.tsv"), ("cubic", "ntt_success_cubic.tsv")):
        for r in read_tsv(src / fname):
            n, k = int(r[0]), int(r[1])
            if cls == "sk":  # NodeSize Index Nall Nsample Pall Psample Pfilter Pbest
                runs, p = int(r[2]), float(r[4])
                path = src / "sk" / f"N{n:03d}-id{k:02d}.txt"
            else:  # Node Index Nsample Psample Pfilter Pbest
                runs, p = int(r[2]), float(r[3])
                path = src / "cubic" / f"N{n:03d}-d03-id{k:02d}.txt"
            succ = int(round(p * runs))
            assert abs(succ / runs - p) < 1e-6, (cls, n, k, p, runs)
            W = read_instance(path)
            assert W.shape == (n, n)
            e0, bits = ground[(cls, n, k)]
            s = np.array([1 if b == "1" else -1 for b in bits], dtype=np.int64)
            assert s.size == n and abs(0.5 * s @ W @ s - e0) < 1e-9, (cls, n, k)
            key = f"{cls}_N{n}_{k}"
            arrays[key] = W
            rows.append((f"instances.npz:{key}", cls, n, runs, succ, e0, bits))
    np.savez_compressed(OUT / "instances.npz", **arrays)
    with open(OUT / "measurements.tsv", "w") as f:
        f.write("# kpp measurements v1\n")
        f.write("# machine: NTT 2000-pulse measurement-feedback CIM (Hamerly et al. 2019)\n")
        f.write("# sk: runs = Nall, successes = Pall*Nall; cubic: runs = Nsample, "
                "successes = Psample*Nsample\n")
        f.write("instance\tclass\tn\truns\tsuccesses\tground_energy\tground_state\n")
        for row in rows:
            f.write("\t".join(str(x) if not isinstance(x, float) else f"{x:g}" for x in row) + "\n")
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
