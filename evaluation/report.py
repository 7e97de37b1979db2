"""Per-organ summary of a scored folder, laid out like Table 5 of the method paper: one row per organ
with mean +- std over cases of DSC and NSD (in %), and an average row (per-case mean over the 13
organs, then mean +- std over cases). NaN values (the official off-by-one on one-slice tubes) are
left out of means."""
from __future__ import annotations

import numpy as np

from flare.labels import ORGANS


def summarise(rows: list[dict]) -> list[tuple[str, float, float, float, float]]:
    """[(row name, DSC mean, DSC std, NSD mean, NSD std)], values in [0, 1], organs then "Average".
    std is the population std (ddof 0) over cases."""
    if not rows:
        return []
    dsc = np.array([[r[f"{o.short}_DSC"] for o in ORGANS] for r in rows], dtype=np.float64)
    nsd = np.array([[r[f"{o.short}_NSD"] for o in ORGANS] for r in rows], dtype=np.float64)
    out = []
    with np.errstate(invalid="ignore"), _quiet():
        for j, organ in enumerate(ORGANS):
            out.append((organ.name.capitalize(), np.nanmean(dsc[:, j]), np.nanstd(dsc[:, j]),
                        np.nanmean(nsd[:, j]), np.nanstd(nsd[:, j])))
        case_dsc, case_nsd = np.nanmean(dsc, axis=1), np.nanmean(nsd, axis=1)
        out.append(("Average", np.nanmean(case_dsc), np.nanstd(case_dsc),
                    np.nanmean(case_nsd), np.nanstd(case_nsd)))
    return out


class _quiet:
    """Silence numpy's 'mean of empty slice' warnings (an all-NaN column stays NaN)."""
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def format_table(rows: list[dict]) -> str:
    """The summary as fixed-width text (percent, 2 decimals)."""
    lines = [f"{'Organ':<22}{'DSC (%)':>17}{'NSD (%)':>17}", "-" * 56]
    for name, dm, ds, nm, ns in summarise(rows):
        if name == "Average":
            lines.append("-" * 56)
        lines.append(f"{name:<22}{100 * dm:>9.2f} ± {100 * ds:<5.2f}{100 * nm:>10.2f} ± {100 * ns:<5.2f}")
    lines.append(f"({len(rows)} case{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
