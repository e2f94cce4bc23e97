"""server"""

__fedecg_room__ = "server"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
