"""storyloom.sim"""
