"""jfb.nets"""
