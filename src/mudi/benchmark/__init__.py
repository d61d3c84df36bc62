"""The benchmark: the paper's comparison protocol (Sec. 5.1, Fig. 6, Table 1) as one resumable run.

Modules: ``config`` (BenchmarkConfig), ``methods`` (the compared methods, pairs, prompts, the no-desc
ablation's subjects), ``cells`` (train / generate / evaluate of one pair × method), ``runner`` (the run),
``tables`` (the paper's tables).
"""
