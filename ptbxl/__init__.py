"""ptbxl"""
