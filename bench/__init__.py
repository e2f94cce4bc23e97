"""bench"""

__fedecg_room__ = "bench"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
