"""Import the partner product feed (CSV) into the catalogue."""
import csv
from pathlib import Path


async def run(path: str = "data/partner_feed.csv", min_price: float = 0.0, **kwargs):
	products = []
	if not Path(path).exists():
		return {"imported": 0, "skus": [], "missing": path}
	with Path(path).open(newline="", encoding="utf-8") as fh:
		for row in csv.DictReader(fh):
			price = float(row["price"])
			if price >= min_price:
				products.append({"sku": row["sku"], "price": price})
	return {"imported": len(products), "skus": [p["sku"] for p in products]}
