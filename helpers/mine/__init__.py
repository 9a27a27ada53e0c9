"""Hard-negative mining (notebook 01): negative sampling rules (mining) and the stage command (hn_mine).
"""
