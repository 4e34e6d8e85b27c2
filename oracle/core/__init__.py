"""The oracle proper: what a user loads and asks (:class:`oracle.core.api.Oracle`), its card, prompt, input
scaling, batching, confidence and yes/no scoring, and the published adapters. ``from oracle import Oracle`` is the
short spelling."""
