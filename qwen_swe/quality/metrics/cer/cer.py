"""Character error rate as an `evaluate` metric module, computed with jiwer (shipped with qwen-swe, no Hub access)."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """\
Character error rate over a corpus: character edits (substitutions + deletions + insertions, spaces included) /
characters in the references, counted over all pairs together. Swedish å, ä and ö are one character each, as long
as both sides use the same Unicode normal form (qwen-swe normalises to NFC before calling it).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of transcripts (hypotheses).
    references: list of reference texts, one per prediction; none may be empty.
Returns:
    a float: 0.0 is perfect; it can exceed 1.0 when the transcripts insert many characters.
Example:
    >>> cer = evaluate.load("qwen_swe/quality/metrics/cer")
    >>> cer.compute(predictions=["bat"], references=["båt"])
    0.3333333333333333
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string", id="sequence"),
                "references": datasets.Value("string", id="sequence"),
            }),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions, references):
        if any(not reference for reference in references):
            raise ValueError("cer: an empty reference has no characters to be wrong about; drop it or fix the text")
        return float(jiwer.cer(list(references), list(predictions)))
