"""Write a trigger .npz: BadEncoder's white square, a checkerboard patch, a noise blend, or CTRL's frequency trigger."""
from __future__ import annotations

import argparse

from pipeline.lab.triggers import FrequencyTrigger, blend_trigger, checker_trigger, square_trigger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kind", choices=["square", "checker", "blend", "ctrl"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=10, help="patch side (square, checker)")
    ap.add_argument("--start", type=int, default=21, help="first row/col of the patch")
    ap.add_argument("--alpha", type=float, default=0.1, help="blend weight")
    ap.add_argument("--magnitude", type=float, default=100.0, help="CTRL: DCT coefficient change")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    trigger = {"square": lambda: square_trigger(a.size, a.start),
               "checker": lambda: checker_trigger(a.size, a.start),
               "blend": lambda: blend_trigger(a.alpha, seed=a.seed),
               "ctrl": lambda: FrequencyTrigger(magnitude=a.magnitude)}[a.kind]()
    trigger.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
