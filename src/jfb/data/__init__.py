"""jfb.data"""
