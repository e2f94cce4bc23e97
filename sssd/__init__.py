"""sssd: the conditional SSSD-MIDT ECG denoiser (pure torch).

config (ModelConfig, presets) · s4 (S4D layers) · model (SSSDDenoiser, unwrap) · diffusion (Schedule) ·
losses (eps-MSE + mel) · sampling (DDPM/DDIM) · checkpoint (save/load/build) · dp (Opacus grad sampler).
See docs/model.md."""

__fedecg_room__ = "sssd"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
