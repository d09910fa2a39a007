"""storyloom.store"""
