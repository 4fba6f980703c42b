"""jfb.physics"""
