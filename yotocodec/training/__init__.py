"""Training: loss-conditional training of the λ-conditioned model, and its fixed-λ special case.

``recipe`` holds a run's settings and what follows from them, ``loop`` the training loop, ``checkpoint`` what a run
saves and exports, ``evaluate`` whole-image validation, ``surgery`` the changes a run may start with (λ range,
revived or added channels) and ``data`` the training patches.  Not imported by ``import yotocodec``.
"""
