"""charforge.eval: measurements on corpora and models (docs/design.md §5), as a library the stages call.

- ``em``: EM question files, sampling answers, judging rows; ``judge`` / ``judge_api``: the local exact
  judge and the API judge; ``judge_validation``: can this judge read alignment and coherence as the EM
  rate needs (per prompt and subset, with its biases), and is a saved verdict this judge's;
  ``agreement``: Krippendorff's α between several judges; ``comparability``: can a figure be compared
  with a published one;
- ``metrics``: the EM figures with bootstrap intervals, both EM-rate conventions, contrasts, slopes;
- ``trait``: trait expression on held-out prompts; ``contamination``: eval prompts in training corpora;
  ``diversity``: diversity metrics of prompt corpora;
- ``report`` / ``report_markdown`` / ``report_judging`` / ``plots``: the report over every variant.

The stages (validate-judge, eval-em, report) live in ``charforge.stages``.
"""
