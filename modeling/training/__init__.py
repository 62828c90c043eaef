"""What training needs, and fitting a trained run for deployment on validation (`finalize`): data, augmentation,
the time budget, checkpoints, calibration and metrics, the lung fields that the thorax augmentation crops to,
the robustness changes, and what a run's log means."""
