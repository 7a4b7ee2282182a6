"""Named parameter sets for the runner (`--preset`) and `python -m inclinet_utils.train`.

Keys are parameter names, run-wide (`inclinet_utils.config.RunConfig`) or a notebook's.
Precedence: notebook default < preset < ``--config FILE.yaml`` < command line.
"laptop" equals the defaults (fast, 2-core CPU; a test keeps them equal); "production"
is the original project's scale, for GPU machines.
"""

# Stages 03/04 own m_iter, batch_size and n_batches; stage 05 the rest.
PRESETS = {
    # Laptop CPU (2 cores), equal to the notebook defaults. model4 trains ~170 images/s at
    # 128 px in bfloat16 with batches of 16: with stage 04's defaults (4 Usets x 3 files;
    # 900 images a file for --band gri, 1800 with grayscale too) 6 passes take ~6.5 min for
    # gri alone, twice that for all bands. Batches of 16 give 4x the gradient updates of 64
    # for the same images, which the short laptop trainings need (benchmarks/ACCURACY.md).
    # model6 (~85 images/s) learned little in the passes that would fit, so it is left out.
    "laptop": {
        "size": 128, "models": ["model4"], "n_passes": 6,
        "training_batch_size": 16, "learning_rate": 1e-3, "bn_momentum": 0.9,
        "mixed_precision": "auto",
        # The accept/reject classifier: model4_binary on Uset 000 only, 3 files of 2 x 200
        # images (gri) x 6 passes, about 1 minute at 128 px on 2 cores; at 1e-3 its ReLU head died.
        "classifiers": ["model4_binary"], "classifier_usets": [0], "classifier_batch_size": 200,
        "classifier_n_passes": 6, "classifier_learning_rate": 3e-4,
    },
    # The original's production scale for GPU machines: 3 models x 4 Usets = 12 trainings,
    # each 50 files x 18000 images x n_passes; spread them with `--models X --usets J`.
    "production": {
        "size": 128, "models": ["model4", "model5", "model6"], "m_iter": 3,
        "batch_size": 1000, "n_batches": 50, "n_passes": 3,
        "training_batch_size": 64, "learning_rate": 1e-3, "bn_momentum": 0.99,
        "mixed_precision": "auto",
        # all three classifiers on every Uset, files of 2 classes x 4500 x colour/grayscale
        "classifiers": ["model4_binary", "model5_binary", "model6_binary"], "classifier_usets": [],
        "classifier_batch_size": 4500, "classifier_n_passes": 3, "classifier_learning_rate": 3e-4,
    },
}
