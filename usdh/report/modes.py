"""How often each method lands low: the seeds whose result falls well below the method's own
median, per protocol and code length, so a reader sees instability as a count, not only as a
wider interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from usdh.report.markdown import section

__all__ = ["LOW_GAP", "low_seeds", "low_seeds_section"]

#: points below the median of a method's seeds at which a seed counts as landing low. Our choice:
#: about four times the seed spread of the stable methods here (ITQ, USDH: std 0.2-0.5 points at
#: 32 bits), and well inside the gaps of the modes we diagnosed (BiHalf about 6, DeepBit up to
#: 14 points; docs/methods.md, "Unstable runs")
LOW_GAP = 2.0


def low_seeds(df: pd.DataFrame, column: str, gap: float = LOW_GAP) -> pd.DataFrame:
    """Per dataset, protocol, method and code length with at least three seeds: how many seeds
    fall more than ``gap`` points below the median of the method's seeds on ``column``, and which
    (with their values)."""
    rows = []
    keys = ["dataset", "protocol", "method", "bits"]
    for key, part in df.dropna(subset=[column]).groupby(keys, sort=False):
        if part["seed"].nunique() < 3:
            continue  # no median to stand out from: one seed, or a method run once
        values = part[column].to_numpy(dtype=float) * 100
        median = float(np.median(values))
        low = part.assign(value=values)[values < median - gap].sort_values("seed")
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "seeds": len(part),
                "low": len(low),
                "median": median,
                "which": ", ".join(
                    f"seed {int(s)} ({v:.1f})"
                    for s, v in zip(low["seed"], low["value"], strict=True)
                ),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "seeds", "low", "median", "which"])


def low_seeds_section(table: pd.DataFrame, main: str, label: str) -> list[str]:
    """The README's count of low seeds on the main protocol: one row per method, one column per
    code length ('k of n', with the seeds that landed low)."""
    part = table[table["protocol"] == main]
    if not len(part):
        return []
    cell = [f"{r.low} of {r.seeds}" + (f": {r.which}" if r.low else "") for r in part.itertuples()]
    grid = part.assign(cell=cell).pivot_table(
        index="method", columns="bits", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"{b} bits" for b in grid.columns]
    total = part.groupby("method", sort=False)[["low", "seeds"]].sum()
    grid.insert(
        0, "all lengths", [f"{total.loc[m, 'low']} of {total.loc[m, 'seeds']}" for m in grid.index]
    )
    text = (
        f"A seed lands low when its {label} falls more than {LOW_GAP:g} points below the median "
        f"of the method's seeds at that code length (our threshold: about four times the seed "
        "spread of the stable methods; docs/methods.md, 'Unstable runs', says what differs in "
        f"the seeds that land low). On the main protocol (`{main}`); methods run once (PCAH, SH) "
        "have no seeds to compare. The verdict's interval already counts this spread; the count "
        "says how often a user who trains once gets the low result."
    )
    return section("### How often each method lands low", grid.fillna("-").reset_index(), text)
