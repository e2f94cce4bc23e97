"""deploy"""

__fedecg_room__ = "deploy"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
