"""``mudi describe``: descriptive classes and training captions from a vision-language model (paper Sec. 4.1,
5.1, A.1). ``config`` (DescribeConfig), ``replies`` (strict parsing and validation of the model's JSON),
``describe`` (ask with retries, write into the subject folders, the report)."""
