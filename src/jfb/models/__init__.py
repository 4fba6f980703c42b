"""jfb.models"""
