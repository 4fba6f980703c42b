"""jfb.train"""
