"""storyloom.novel"""
