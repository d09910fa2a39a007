"""storyloom.jobs"""
