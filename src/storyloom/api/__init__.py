"""storyloom.api"""
