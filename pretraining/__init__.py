"""pretraining"""

__fedecg_room__ = "pretraining"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
