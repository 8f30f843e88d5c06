"""Word error rate as an `evaluate` metric module, computed with jiwer (shipped with qwen-swe, no Hub access)."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """\
Word error rate over a corpus: (substitutions + deletions + insertions) / words in the references, counted over all
pairs together (not a mean of per-sentence rates), so long sentences weigh more. Words are split on whitespace;
normalise case and punctuation before calling it if they should not count.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of transcripts (hypotheses).
    references: list of reference texts, one per prediction; none may be empty.
Returns:
    a float: 0.0 is perfect; it can exceed 1.0 when the transcripts insert many words.
Example:
    >>> wer = evaluate.load("qwen_swe/quality/metrics/wer")
    >>> wer.compute(predictions=["hej på dig"], references=["hej på er"])
    0.3333333333333333
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WER(evaluate.Metric):
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
        if any(not reference.strip() for reference in references):
            raise ValueError("wer: an empty reference has no words to be wrong about; drop it or fix the text")
        return float(jiwer.wer(list(references), list(predictions)))
