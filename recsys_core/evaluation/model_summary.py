"""The model's chosen settings in the evaluation report's words (``recsys_core.evaluation.report``)."""

from __future__ import annotations

import math


def item_item_sentence(item: dict) -> str:
    """The model's chosen item-item term, half-life and recent popularity, in one sentence."""
    keys = ("fit", "blend", "half_life", "window", "popularity")
    recent = item.get("recent", {})
    want = (item.get("fit", 0), item["blend"], item.get("half_life"), recent.get("window_bins", 0), recent.get("weight", 0.0))
    chosen = next((row for row in item["grid"] if tuple(row.get(k) for k in keys) == want), {})
    alone = next((row for row in item["grid"] if row["blend"] == 0 and not row.get("popularity")), {})
    half_life = "no decay" if item.get("half_life") is None else f"half-life {item['half_life']:g} ratings"
    popularity = (f"recent popularity {recent['window_bins']} × {recent['bin_days']} days, weight {recent['weight']:g}"
                  if recent.get("weight") else "recent popularity off")  # fmt: skip
    return (f"Item-item term: {'EDLAE' if item.get('dropout') else 'EASE'} on {item.get('feedback', 'liked')} "
            f"ratings (λ {item.get('l2', math.nan):g}, dropout {item.get('dropout', 0.0):g}) over {item['films']:,} "
            f"films, {item['neighbours']} weights each, search {item.get('search', {}).get('seconds', math.nan):.1f} s; "
            f"blend {item['blend']:g}, "
            f"{half_life}, {popularity}, chosen on the validation users (NDCG@10 "
            f"{chosen.get('ndcg@10', math.nan):.4f}; the AE alone {alone.get('ndcg@10', math.nan):.4f}).")
