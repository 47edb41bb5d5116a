"""In-context retrieval and language evaluations (Birdie §4) of a placed model's params
(`models.placed.PlacedModel`). Fine-tuning on them (App. A.9) is training: `train/finetune*.py`.
Nothing here imports `train/` (tests/test_import_layers.py).

    task.py      what a task is: deterministic examples over a difficulty sweep, and a scorer
    tasks.py     the registry: phonebook, mqar, copying, copying_frequent, copying_text,
                 selective_copying, induction, passage_qa, story_infilling, perplexity
    natural_copying.py  copying_text: held-out prose copied (Jelassi et al.'s "repeat after me")
    layout.py    examples laid out as the model was trained (prefix or continuation layout)
    runner.py    `Evaluator(config, tokenizer, placed).run(params, step=...)` -> `Report`
    report.py    results as scalars (`eval/<task>/<metric>`), JSON, markdown and plots
    objectives_eval.py  objective competence: per class held-out loss and token accuracy in
                 the training layout (`evaluate --tasks=objectives`); objectives_report.py
    stats.py     means with 95% intervals over seeds, Wilson intervals, verdicts beyond them
    sanity.py    the sanity gate that opens every results file (Transformer-NTP must pass)
    settings.py  the `eval` config section and its validation
"""
