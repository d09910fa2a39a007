"""storyloom.commands"""
