"""The results table as a ledger: which of a manifest's pairs are new, changed or unchanged.

Every row records the fingerprints of the files it saw (size + modification time, or
the S3 ETag, from the manifest's listing). A pair is unchanged when its latest attempt
succeeded on the files as they are now and its output is still there: it is skipped.
A photo or style replaced under the same name has a new fingerprint: the pair is
redone, never silently skipped. An output is looked for where the table says it was
written, so one named as earlier versions named outputs is found there too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from nst_core.storage import Storage

from .manifest import Pair, expand_manifest
from .results import latest_rows, read_results

# The columns classify reads: a row's loss histories, most of its bytes, are never decoded.
COLUMNS = ["pair_id", "status", "finished_at", "output_uri", "content_fingerprint", "style_fingerprint", "transient"]


@dataclass
class Ledger:
    """A manifest's pairs sorted by what the results table says about them."""

    new: list[Pair] = field(default_factory=list)  # never succeeded (or its output is gone, or it failed)
    changed: list[Pair] = field(default_factory=list)  # succeeded before, on files that have changed since
    unchanged: list[Pair] = field(default_factory=list)  # succeeded on these very files, output there: skipped
    still_failing: list[Pair] = field(default_factory=list)  # --since-last: failed on these very files: skipped
    earlier_defaults: list[Pair] = field(default_factory=list)  # unchanged, made under earlier defaults: skipped

    @property
    def todo(self) -> list[Pair]:
        return self.new + self.changed

    @property
    def skipped(self) -> list[Pair]:
        return self.unchanged + self.earlier_defaults + self.still_failing

    def counts(self) -> dict[str, int]:
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "earlier_defaults": len(self.earlier_defaults),
            "still_failing": len(self.still_failing),
        }


def read_ledger(results_uri: str, storage: Storage) -> pd.DataFrame:
    """The results table as classify needs it: only its COLUMNS (classify keeps each pair's latest rows)."""
    return read_results(results_uri, storage=storage, columns=COLUMNS)


def _same_files(row: pd.Series, pair: Pair) -> bool:
    """Whether the row saw the files the pair sees now. Rows written before fingerprints were
    recorded have none: trusted, so upgrading does not redo a whole collection."""
    if pd.isna(row["content_fingerprint"]):
        return True
    return (row["content_fingerprint"], row["style_fingerprint"]) == (pair.content_fingerprint, pair.style_fingerprint)


def _bad_input(row: pd.Series) -> bool:
    """A failure of the pair's own files or parameters; unknown (older rows) counts as transient."""
    return pd.notna(row["transient"]) and not row["transient"]


def _done_earlier(pair: Pair, latest: pd.DataFrame, storage: Storage) -> Pair | None:
    """The pair as earlier defaults made it, if that succeeded on these very files and its output is
    still there: changing a default does not redo a collection (`--force` does)."""
    for earlier_id, params in pair.earlier:
        last = latest.loc[earlier_id] if earlier_id in latest.index else None
        if (
            last is not None
            and last["status"] == "succeeded"
            and _same_files(last, pair)
            and storage.exists(last["output_uri"])
        ):
            return dataclasses.replace(pair, pair_id=earlier_id, params=params, output=last["output_uri"], earlier=())
    return None


def classify(pairs: list[Pair], table: pd.DataFrame, storage: Storage, since_last: bool = False) -> Ledger:
    """Sort pairs into new, changed and unchanged against the table.

    With `since_last`, a pair whose latest attempt failed on bad input (not a storage
    error) and whose files have not changed since is skipped too: it would fail the
    same way. Replace or touch the file, or run without --since-last, to retry it.
    """
    ledger = Ledger()
    latest, succeeded = latest_rows(table)
    for pair in pairs:
        last = latest.loc[pair.pair_id] if pair.pair_id in latest.index else None
        if (
            last is not None
            and last["status"] == "succeeded"
            and _same_files(last, pair)
            and last["output_uri"] in (pair.output, pair.former_output)
            and storage.exists(last["output_uri"])
        ):
            ledger.unchanged.append(dataclasses.replace(pair, output=last["output_uri"]))  # where it was made
        elif (done := _done_earlier(pair, latest, storage)) is not None:
            ledger.earlier_defaults.append(done)
        elif (
            since_last
            and last is not None
            and last["status"] == "failed"
            and _bad_input(last)
            and _same_files(last, pair)
        ):
            ledger.still_failing.append(pair)
        elif pair.pair_id in succeeded.index and not _same_files(succeeded.loc[pair.pair_id], pair):
            ledger.changed.append(pair)
        else:
            ledger.new.append(pair)
    return ledger


def ledger_line(counts) -> str:
    """What the results table said about the manifest's pairs (counts by ledger class), in words."""
    line = f"{counts['new']} new, {counts['changed']} changed, {counts['unchanged']} unchanged (skipped)"
    if counts["earlier_defaults"]:
        line += f", {counts['earlier_defaults']} made with earlier defaults (skipped; --force redoes them)"
    return line + (f", {counts['still_failing']} still failing (skipped)" if counts["still_failing"] else "")


def manifest_ledger(
    manifest: str,
    out: str,
    results_uri: str,
    *,
    storage: Storage,
    since_last: bool,
    force: bool = False,
    **expand_options,
) -> tuple[Ledger, list[str]]:
    """(the manifest's pairs sorted by what the results table says, as the flow sorts them: all of them
    to do under `force`; the manifest's warnings), read without Prefect. `expand_options` go to
    expand_manifest."""
    pairs, warnings = expand_manifest(manifest, out, storage=storage, **expand_options)
    return sort_pairs(pairs, results_uri, storage, force=force, since_last=since_last), warnings


def sort_pairs(pairs: list[Pair], results_uri: str, storage: Storage, *, force: bool, since_last: bool) -> Ledger:
    """The pairs sorted by what the results table says (classify); all of them to do under `force`,
    without reading the table."""
    if force:
        return Ledger(new=pairs)
    return classify(pairs, read_ledger(results_uri, storage), storage, since_last)
