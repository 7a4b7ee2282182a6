"""Named parameter sets for the runner (`--preset`): scale of a run, not its science.

Values are notebook parameters; explicit command-line options override them.
The notebooks' own defaults are the fast laptop-CPU settings.
"""

PRESETS = {
    # The original project's production scale, for GPU machines: models 4, 5, 6;
    # three bagging subsamples; 1000 galaxies per 5-degree bin; 50 batch files.
    "production": {
        "models": ["model4", "model5", "model6"],
        "m_iter": 3,
        "batch_size": 1000,
        "n_batches": 50,
    },
}
