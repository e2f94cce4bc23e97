"""simulations"""

__fedecg_room__ = "simulations"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
