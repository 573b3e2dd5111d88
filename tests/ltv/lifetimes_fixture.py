"""Writes the lifetimes reference the ltv integration test compares with.

Run by hand (not by `make test`), from the repository root, with the
virtualenv `make deps` makes (scripts/deps.sh):

    target/venv-lifetimes/bin/python tests/ltv/lifetimes_fixture.py

Input: CDNOW_sample.txt as lifetimes ships it (lifetimes/datasets/, copied to
tests/ltv/ with its columns: customer id, id in the full data set, date
YYYYMMDD, number of CDs, dollar value). Output: tests/ltv/cdnow_summary.csv,
lifetimes.utils.summary_data_from_transaction_data per customer for
freq='D' with freq_multiplier 1 and 7, observation end 1998-06-30.
"""
import csv
import shutil
import sys
from pathlib import Path

import lifetimes
import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data

here = Path(__file__).resolve().parent
src = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"
shutil.copyfile(src, here / "CDNOW_sample.txt")
df = pd.read_csv(src, sep=r"\s+", header=None, names=["customer_id", "full_id", "date", "cds", "spent"],
                 dtype={"customer_id": str, "date": str})
df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
rows = []
for mult in (1, 7):
    s = summary_data_from_transaction_data(df, "customer_id", "date", monetary_value_col="spent",
                                           observation_period_end="1998-06-30", freq="D", freq_multiplier=mult)
    for cid, r in s.iterrows():
        rows.append([mult, cid, int(r["frequency"]), repr(float(r["recency"])), repr(float(r["T"])),
                     repr(float(r["monetary_value"]))])
with open(here / "cdnow_summary.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["period_days", "customer_id", "frequency", "recency", "T", "monetary_value"])
    w.writerows(sorted(rows))
print(f"lifetimes {lifetimes.__version__}, pandas {pd.__version__}: {len(rows)} rows", file=sys.stderr)
