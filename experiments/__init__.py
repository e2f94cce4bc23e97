"""Experiments: what runs federations on behalf of others (the MIDT ablation, the canary audit's training
runs). evaluation/ and privacy/ keep functions over arrays and run directories."""

__fedecg_room__ = "experiments"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
