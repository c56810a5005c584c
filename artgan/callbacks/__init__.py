"""Lightning callbacks: progress bar, samples and GIF, plots, metrics, checkpoints, divergence guard."""
