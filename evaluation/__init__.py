"""evaluation"""

__fedecg_room__ = "evaluation"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
