"""storyloom.bench"""
