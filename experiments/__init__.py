"""Experiments: what runs federations on behalf of others (the MIDT ablation, the canary audit's training
runs). evaluation/ and privacy/ keep functions over arrays and run directories."""
