"""otgate.supervisors"""
