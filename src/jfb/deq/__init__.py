"""jfb.deq"""
