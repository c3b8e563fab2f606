# -*- coding: latin-1 -*-
"""Refresh the exchange rates (taux de change) used by the reports.

Écrit par l'équipe finance ; the provider file is data/rates.json.
"""
from scripts._common import load_json, save_json

DESCRIPTION = "Rafraîchit les taux de change"
CATEGORY = "finance"


def refresh_exchange_rates(data, base):
    """Re-base every rate on `base` (the provider quotes against EUR)."""
    if base == data["base"]:
        return {"base": base, "rates": dict(data["rates"])}
    pivot = data["rates"][base]
    rates = {code: round(rate / pivot, 6) for code, rate in data["rates"].items() if code != base}
    rates[data["base"]] = round(1 / pivot, 6)
    return {"base": base, "rates": rates}


def run(base="EUR", **kwargs):
    data = load_json("rates.json", default={"base": "EUR", "rates": {}})
    rebased = refresh_exchange_rates(data, base)
    save_json("state/rates.json", rebased)
    return {"base": base, "currencies": sorted(rebased["rates"]), "usd": rebased["rates"].get("USD")}
