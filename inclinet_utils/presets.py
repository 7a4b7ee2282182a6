"""Named parameter sets for the runner (`--preset`) and `python -m inclinet_utils.train`.

Keys are parameter names, run-wide (`inclinet_utils.config.RunConfig`) or a notebook's.
Precedence: notebook default < preset < ``--config FILE.yaml`` < command line.
"laptop" equals the defaults (fast, 2-core CPU; a test keeps them equal); "production"
is the original project's scale, for GPU machines.
"""

# Stages 03/04 own m_iter, batch_size and n_batches; stage 05 the rest.
PRESETS = {
    # Laptop CPU (2 cores), equal to the notebook defaults. model4 trains ~230 images/s at
    # 128 px in bfloat16 on AMX, ~110 in float32 elsewhere, with batches of 16. Two Usets
    # (the full training set 000 and one bagging subsample, m_iter 1) x 6 files x 6 passes:
    # the same images as 4 Usets x 3 files, but each network gets twice the updates, which the short laptop trainings
    # need (4.83 -> 3.66 deg RMS on a development sample, benchmarks/ACCURACY.md). Batches
    # of 16 give 4x the gradient updates of 64 for the same images. model6 (~85 images/s)
    # learned little in the passes that would fit, so it is left out.
    "laptop": {
        # bagging_fraction: the original's 2/3. The whole training set for both (1, a seed
        # ensemble) was no better over three development seeds (benchmarks/ACCURACY.md).
        "size": 128, "m_iter": 1, "bagging_fraction": 0.6667, "n_batches": 6, "models": ["model4"],
        "n_passes": 6, "training_batch_size": 16, "learning_rate": 1e-3, "bn_momentum": 0.9,
        "mixed_precision": "auto",
        # The accept/reject classifier: model4_binary on Uset 000 only, 6 files of 2 x 200
        # images (gri) x 3 passes, about 1 minute at 128 px on 2 cores; at 1e-3 its head (then ReLU) died.
        "classifiers": ["model4_binary"], "classifier_usets": [0], "classifier_batch_size": 200,
        "classifier_n_passes": 3, "classifier_learning_rate": 3e-4,
    },
    # The original's production scale for GPU machines: 3 models x 4 Usets = 12 trainings,
    # each 50 files x 18000 images x n_passes; spread them with `--models X --usets J`.
    "production": {
        "size": 128, "models": ["model4", "model5", "model6"], "m_iter": 3, "bagging_fraction": 0.6667,
        "batch_size": 1000, "n_batches": 50, "n_passes": 3,
        "training_batch_size": 64, "learning_rate": 1e-3, "bn_momentum": 0.99,
        "mixed_precision": "auto",
        # all three classifiers on every Uset, files of 2 classes x 4500 x colour/grayscale
        "classifiers": ["model4_binary", "model5_binary", "model6_binary"], "classifier_usets": [],
        "classifier_batch_size": 4500, "classifier_n_passes": 3, "classifier_learning_rate": 3e-4,
    },
}

# Stage 00 instruments (simulate_observe.Instrument fields). Depth is the electrons per
# nanomaggy (gain x exposure x throughput); the sky and read noise set the noise per pixel.
INSTRUMENTS = {
    "sdss": {
        "pixel_scale": 0.396, "psf_fwhm": (1.4, 0.08, 1.0, 2.0),
        "e_per_nmgy": {"g": 920.0, "r": 900.0, "i": 750.0},
        "sky_mag": {"g": 21.8, "r": 20.9, "i": 20.3}, "read_noise_e": 5.0,
        "rgb_weights": {"g": 2.0, "r": 1.3, "i": 1.0},
    },
    # A deeper survey (HSC/Legacy-like): 0.2"/px, ~0.7" seeing, 6x the electrons per
    # nanomaggy on a darker sky, composite weighted towards red (i), as many of the newer
    # surveys' colour images are.
    "deep": {
        "pixel_scale": 0.2, "psf_fwhm": (0.7, 0.06, 0.5, 1.0),
        "e_per_nmgy": {"g": 5500.0, "r": 5400.0, "i": 4500.0},
        "sky_mag": {"g": 22.1, "r": 21.2, "i": 20.5}, "read_noise_e": 4.0,
        "rgb_weights": {"g": 1.0, "r": 1.2, "i": 1.8},
    },
}
