"""In-context retrieval and language evaluations (Birdie §4), and fine-tuning on them (App. A.9).

    task.py      what a task is: deterministic examples over a difficulty sweep, and a scorer
    tasks.py     the registry: phonebook, mqar, copying, selective_copying, induction,
                 passage_qa, story_infilling, perplexity
    layout.py    examples laid out as the model was trained (prefix or continuation layout)
    runner.py    `Evaluator(config, tokenizer, setup).run(params, step=...)` -> `Report`
    report.py    results as scalars (`eval/<task>/<metric>`), JSON, markdown and plots
    finetune.py  fine-tuning on tasks' training examples (paper A.9's phonebook protocol)
    settings.py  the `eval` config section and its validation
"""
