"""What a validation found: one result per expectation, the result of a table, the error
that carries a failed result."""

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from decflow.errors import DataError
if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ExpectationResult:
    """Outcome of one expectation, in words.

    ``sample`` holds up to ``validation.sample_size`` offending rows as JSON-serialisable values:
    ``{"<id column>": id, "value": v}`` for scalar columns (``{"row": i, ...}`` when the id is
    unavailable), ``{"<id column>": id, "length": n}`` for vector lengths, duplicated id values
    for the uniqueness check; empty on success.
    """

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_not_be_null"
    column: str | None  # the frame's column (never a derived helper column); None: table-level
    success: bool
    details: str
    sample: list = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)  # partitions with offending rows


@dataclass(frozen=True)
class ValidationResult:
    """All expectation results for one frame."""

    success: bool
    n_rows: int
    results: list[ExpectationResult]  # every expectation evaluated, in suite order

    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> str:
        """One line per failed expectation, or a single line saying everything passed."""
        failed = self.failures()
        if not failed:
            return f"all {len(self.results)} expectations passed on {self.n_rows} rows"
        lines = []
        for r in failed:
            where = f" on column '{r.column}'" if r.column is not None else ""
            if r.partitions:
                shown = ", ".join(r.partitions[:10]) + (", ..." if len(r.partitions) > 10 else "")
                where += f" in partition(s) {shown}"
            sample = f"; sample: {json.dumps(r.sample)}" if r.sample else ""
            lines.append(f"{r.expectation}{where}: {r.details}{sample}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (e.g. an MLflow artifact)."""
        return {
            "success": self.success,
            "n_rows": self.n_rows,
            "n_expectations": len(self.results),
            "n_failed": len(self.failures()),
            "results": [asdict(r) for r in self.results],
        }

    def to_markdown(self) -> str:
        """A heading line and a table with one row per expectation (e.g. a Prefect artifact)."""
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"**Data validation {verdict}**: {len(self.failures())} of {len(self.results)} "
            f"expectations failed on {self.n_rows} rows",
            "",
            "| expectation | column | result | details |",
            "|---|---|---|---|",
        ]
        for r in self.results:
            details = r.details + (f"; sample: {json.dumps(r.sample)}" if r.sample else "")
            cells = [r.expectation, r.column or "", "passed" if r.success else "**FAILED**",
                     details]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines)


class DataValidationError(DataError):
    """Raised by ``check`` when a frame fails validation; ``.result`` holds every expectation's
    result."""

    def __init__(self, result: ValidationResult):
        self.result = result
        n_failed = len(result.failures())
        super().__init__(
            f"data validation failed: {n_failed} of {len(result.results)} expectations failed "
            f"on {result.n_rows} rows:\n{result.summary()}"
        )

    def __reduce__(self):  # picklable across processes (Prefect, Dask)
        return (type(self), (self.result,))


def check(result: ValidationResult) -> ValidationResult:
    """Return ``result`` if it passed, else raise ``DataValidationError`` naming each failure."""
    if not result.success:
        raise DataValidationError(result)
    return result


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
