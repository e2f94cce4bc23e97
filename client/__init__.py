"""client"""

__fedecg_room__ = "client"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
